# -*- test-case-name: tests.test_binary,tests.test_binary_redisstore,tests.test_binary_store -*-
"""SPB/1, sockproto's framed binary protocol, over a durable key-value store."""
