"""A real QEMU on the other end: its main migration channel, its QMP, both directions.

``main_channel`` writes and reads QEMU's main stream for a RAM-only machine,
``qmp`` talks to a QEMU's monitor with deadlines, ``source`` migrates the
engine's RAM into a QEMU started with ``-incoming``, ``destination``
receives a real QEMU source (../shared/spec/qemu-main-channel.md).
"""
