"""Tests of gan_detect/infer/."""
