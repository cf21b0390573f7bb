"""Tests of gan_detect/detector/."""
