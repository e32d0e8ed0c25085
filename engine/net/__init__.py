"""A migration between two hosts: TCP channels (``transport``), the control
connection's messages (``control``), and the two ends (``migration``)."""
