"""Fleet management over the air (issue #20): app bundles and their chunked transfer, with the
state of each device's update kept by the hub."""
