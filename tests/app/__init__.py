"""Tests of gan_detect/app/."""
