"""Tests of gan_detect/config/."""
