class LightsweepError(Exception):
    """A problem the user can fix: its message is printed as one line that names the fix."""
