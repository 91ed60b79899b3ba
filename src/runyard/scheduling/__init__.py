"""Schedules: runs submitted by the clock, and the scheduler that fires them."""
