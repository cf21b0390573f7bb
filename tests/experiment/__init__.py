"""Tests of gan_detect/experiment/."""
