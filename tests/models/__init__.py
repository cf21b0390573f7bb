"""Tests of gan_detect/models/."""
