"""Developer and fleet tools: simulate devices (and, later, flash, deploy, provision)."""
