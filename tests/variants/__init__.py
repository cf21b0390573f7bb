"""Tests of gan_detect/variants/."""
