"""The pure core: scheduling and limit maths, statuses. No I/O; time is an argument."""
