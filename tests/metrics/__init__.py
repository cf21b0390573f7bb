"""Tests of gan_detect/metrics/."""
