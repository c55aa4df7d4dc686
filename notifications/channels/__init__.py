"""One module per channel, each with a ``send`` taking a rendered Notification."""
