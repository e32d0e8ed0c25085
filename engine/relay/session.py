"""One relayed migration: QEMU (or a peer relay) in, the next hop out.

::

    --listen                                             --to
    1st connection = main channel ── MainChannelForwarder ── connected first
    each later one = multifd channel ── ChannelTranslator ── connected once
                     (one thread each)   (method A → B,      its init packet
                                          its own worker)     is known

The relay is the same program on both hosts; only the config says what
each side speaks (``[relay] incoming_method`` / ``outgoing_method``).  It
serves one migration and returns its report when every connection ended.

A fault anywhere (a bad packet, a stalled or closed peer, a worker that
died and could not be replaced, a method mismatch, a channel that ends
mid-round) ends the whole session: every socket, on both sides, is reset
(not closed with an end of stream, which a QEMU could take for a clean
end), so a real QEMU at either end sees its connections fail instead of
waiting, and the first error is raised.  A peer relay sees the reset too
and gives up in turn.  Reads and writes of the multifd
channels are bounded by ``[transport] stall_timeout``, writes of the main
channel too (its reads are paced by QEMU), connecting by
``connect_timeout`` and waiting for the main channel by ``accept_timeout``.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import threading
import time
from contextlib import ExitStack
from typing import Callable

from engine import errors, methods, threads, wire
from engine.config import Config, level_of
from engine.devices import receive_jobs, send_jobs
from engine.net.transport import Address, Listener, TcpSink, TcpSource, connect
from engine.relay.main_channel import MainChannelForwarder
from engine.relay.report import RelayReport
from engine.relay.translator import ChannelTranslator, TranslatorSettings

_POLL = 0.2          # seconds between looks at the listener and the threads
_JOIN = 10.0         # seconds a thread may take to wind down after the sockets closed
_RESET = struct.pack("ii", 1, 0)   # SO_LINGER on, 0 s: close() sends a reset, not an end of stream


def relay_migration(config: Config, listen: Address | str, to: Address | str, *,
                    on_listening: Callable[[Address], None] | None = None) -> RelayReport:
    """Relay one migration from ``listen`` to ``to``; the report, or the first error."""
    return RelaySession(config, listen, to).run(on_listening)


class RelaySession:
    def __init__(self, config: Config, listen: Address | str, to: Address | str) -> None:
        self.config = config
        self.listen = listen if isinstance(listen, Address) else Address.parse(listen)
        self.to = to if isinstance(to, Address) else Address.parse(to)
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._failure: BaseException | None = None
        self._failed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._translators: list[ChannelTranslator] = []
        self._forwarder: MainChannelForwarder | None = None
        self._preparing: list[threading.Thread] = []
        self._source_done: float | None = None

    # ---- the session -------------------------------------------------

    def run(self, on_listening: Callable[[Address], None] | None = None) -> RelayReport:
        r = self.config.relay
        report = RelayReport(str(self.listen), str(self.to), r.incoming_method, r.outgoing_method,
                             self.config.migration.qemu_version, self.config.migration.page_size)
        started = time.monotonic()
        with ExitStack() as stack:
            listener = Listener(self.listen)
            stack.callback(listener.close)
            report.listen = str(listener.address)
            if on_listening is not None:
                on_listening(listener.address)
            settings = self._translator_settings(stack)
            stack.callback(self._wind_down)
            try:
                forwarder = self._start(listener, settings)
                self._serve(listener, forwarder)
            except BaseException as exc:
                self.fail(exc)      # reset both sides, whatever went wrong here
                raise
            report.main_forward, report.main_back = forwarder.forward.bytes, forwarder.back.bytes
        report.seconds = time.monotonic() - started
        used = self._translators[:len(self._threads)]
        report.channels = sorted((tr.traffic for tr in used), key=lambda c: c.channel)
        if self._failure is not None:
            raise self._failure
        return report

    def _start(self, listener: Listener, settings: TranslatorSettings) -> MainChannelForwarder:
        """Workers starting, QEMU's main channel accepted and connected onwards, copying."""
        t = self.config.transport
        self._prepare(settings)
        main, source_peer = self._accept_main(listener)
        if main is None:
            raise self._failure or errors.TransportError("the relay gave up")
        self._keep(main)
        out = connect(self.to, timeout=t.connect_timeout, stall_timeout=t.stall_timeout)
        self._keep(out)
        self._forwarder = MainChannelForwarder(main, out, stall_timeout=t.stall_timeout,
                                               on_error=self.fail,
                                               peers=(source_peer, str(self.to)),
                                               aborted=self._failed)
        self._forwarder.start()
        return self._forwarder

    def _prepare(self, settings: TranslatorSettings) -> None:
        """One translator per channel, its worker starting while QEMU is not there yet."""
        for index in range(self.config.relay.channels):
            translator = ChannelTranslator(self._open_sink, settings, index=index)
            thread = threading.Thread(target=self._guarded, args=(translator.prepare,),
                                      name=f"mfd-relay-prepare-{index}", daemon=True)
            self._translators.append(translator)
            self._preparing.append(thread)
            threads.start(thread)

    def _accept_main(self, listener: Listener) -> tuple[socket.socket | None, str]:
        t = self.config.transport
        deadline = time.monotonic() + t.accept_timeout
        while not self._failed.is_set():
            try:
                return listener.accept(timeout=_POLL, stall_timeout=t.stall_timeout,
                                       what="QEMU main channel")
            except errors.ConnectFailed:
                if time.monotonic() > deadline:
                    raise errors.ConnectFailed(f"no QEMU main channel connected within "
                                               f"{t.accept_timeout:g} s",
                                               peer=str(listener.address)) from None
        return None, ""

    def _guarded(self, step: Callable[[], object]) -> None:
        try:
            step()
        except BaseException as exc:  # noqa: BLE001 - the session reports it
            self.fail(exc)

    def _serve(self, listener: Listener, forwarder: MainChannelForwarder) -> None:
        """Take multifd channels until the main channel and every channel ended."""
        t = self.config.transport
        while not self._failed.is_set():
            channels_done = not any(th.is_alive() for th in self._threads)
            if forwarder.finished and channels_done:
                return
            if forwarder.forward.done:
                self._check_destination(channels_done)
            try:
                sock, peer = listener.accept(timeout=_POLL, stall_timeout=t.stall_timeout,
                                             what="multifd channel")
            except errors.ConnectFailed:
                continue
            self._keep(sock)
            if len(self._threads) >= self.config.relay.channels:
                self.fail(errors.ConnectFailed(
                    f"more multifd connections than relay.channels = {self.config.relay.channels}",
                    peer=peer))
                return
            self._start_channel(sock, peer)

    def _check_destination(self, channels_done: bool) -> None:
        """After the source ended: the destination has stall_timeout to close its side.

        A destination still loading after that is waiting for something that
        will not come (QEMU blocks at a sync point whose SYNC packets were lost).
        """
        if self._source_done is None:
            self._source_done = time.monotonic()
        stall = self.config.transport.stall_timeout
        if channels_done and time.monotonic() - self._source_done > stall:
            self.fail(errors.PeerStalled(
                f"the destination did not finish within {stall:g} s after the source ended "
                "(a QEMU destination blocks at a sync point whose SYNC packets never came)",
                peer=str(self.to)))

    def _start_channel(self, sock: socket.socket, peer: str) -> None:
        index = len(self._threads)
        source = _HeldSource(sock, index, peer=peer)
        thread = threading.Thread(target=self._guarded, args=(lambda: self._run_channel(index, source),),
                                  name=f"mfd-relay-channel-{index}", daemon=True)
        self._threads.append(thread)
        threads.start(thread)

    def _run_channel(self, index: int, source: TcpSource) -> None:
        self._preparing[index].join()
        if not self._failed.is_set():
            self._translators[index].run(source)

    def _open_sink(self, init: wire.InitPacket) -> TcpSink:
        t = self.config.transport
        if self._failed.is_set():
            raise errors.TransportError("the relay is shutting down", channel=init.channel_id)
        sock = connect(self.to, timeout=t.connect_timeout, stall_timeout=t.stall_timeout,
                       channel=init.channel_id)
        self._keep(sock)
        return _HeldSink(sock, init.channel_id, peer=str(self.to))

    def _translator_settings(self, stack: ExitStack) -> TranslatorSettings:
        c, r, m = self.config, self.config.relay, self.config.migration

        def with_method(name: str) -> Config:
            return dataclasses.replace(c, migration=dataclasses.replace(m, method=name))

        recv_jobs, _ = receive_jobs(with_method(r.incoming_method), stack, r.channels)
        jobs, _ = send_jobs(with_method(r.outgoing_method), stack, r.channels)
        level = level_of(m, methods.get(r.outgoing_method))
        return TranslatorSettings(
            r.incoming_method, r.outgoing_method, page_size=m.page_size, compat=m.compat,
            channels=r.channels, recv_jobs=recv_jobs, send_jobs=jobs, method_level=level,
            worker_restarts=c.run.worker_restarts, result_timeout=c.transport.stall_timeout)

    # ---- failure -----------------------------------------------------

    def fail(self, exc: BaseException) -> None:
        """The first fault ends the session: every socket of both sides is shut down."""
        with self._lock:
            if self._failure is None and not self._failed.is_set():
                self._failure = exc
            self._failed.set()
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            failed = self._failed.is_set()
        if failed:
            _shut(sock)

    def _wind_down(self) -> None:
        """Stop what is still running (after a fault or Ctrl-C) and close every socket."""
        if any(th.is_alive() for th in self._threads):
            self.fail(errors.TransportError("the relay stopped before its channels ended"))
        deadline = time.monotonic() + _JOIN
        for thread in self._preparing + self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for translator in self._translators:
            translator.close()      # the unused ones: their workers and staging
        if self._forwarder is not None:
            if not self._forwarder.finished:
                self.fail(errors.TransportError("the relay stopped before the main channel ended"))
            self._forwarder.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            if self._failed.is_set():
                _shut(sock)
            sock.close()


class _HeldSource(TcpSource):
    """A channel's incoming end whose socket the session closes (see ``_HeldSink``)."""

    def close(self) -> None:
        pass


class _HeldSink(TcpSink):
    """A channel's outgoing end whose socket the session closes.

    A channel that ended is not closed on its own: only when the session
    knows how every connection ended does each socket get an end of stream
    (all well) or a reset (a fault anywhere).  A QEMU destination that saw a
    multifd channel end cleanly would stop reading it and could wait at its
    next sync point for ever.
    """

    def close(self) -> None:
        pass


def _shut(sock: socket.socket) -> None:
    """Reset ``sock`` on close and wake whoever waits to read it (no end of stream is sent)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass   # closed or not connected any more: nothing to end

