"""Tests of gan_detect/utils/."""
