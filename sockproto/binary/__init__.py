"""SPB/1, sockproto's framed binary protocol, over a durable key-value store."""
