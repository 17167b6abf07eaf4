"""mailsched: an email campaign scheduler that never loses an email.

The database is the timer, a queue carries due work, workers send over SMTP.
"""

__version__ = "0.1.0"
