"""Tests of gan_detect/train/."""
