"""Tests of gan_detect/data/."""
