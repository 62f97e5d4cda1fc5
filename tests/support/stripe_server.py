"""Test helpers for the Stripe sync: a real localstripe server process, a fault-injecting
HTTP proxy in front of it, and Stripe-style webhook signatures.

Run as a script, this module is the server launcher::

    python tests/support/stripe_server.py --port 8420 --state /tmp/x.pickle

It imports localstripe's aiohttp app and serves it on 127.0.0.1 only (localstripe's own
``start()`` binds every interface). It also closes a few gaps of localstripe 1.15 where it
departs from the real Stripe API that ``billing.stripe_sync`` relies on; each patch mirrors
Stripe's documented behaviour and nothing more (see ``patch_localstripe``):

1. ``POST /v1/invoices`` for a customer without a subscription. localstripe answers 404
   ("No upcoming invoices"); Stripe creates a draft invoice. ``metadata``, ``currency``,
   ``auto_advance``, ``collection_method`` and ``pending_invoice_items_behavior`` (default
   ``exclude`` since API 2022-08-01) are honoured instead of dropped.
2. ``POST /v1/invoiceitems`` with ``invoice=in_...`` adds the item to that draft invoice
   (localstripe stores the link but never adds the line); items on a non-draft invoice are
   refused as Stripe does.
3. ``POST /v1/invoices/{id}/finalize`` (missing): draft -> open (paid when the total is 0).
4. ``POST /v1/invoices/{id}/void`` on an invoice with no payment intent: localstripe fails
   with 400 trying to cancel ``None``; Stripe voids the open invoice.
5. State is kept in a per-test file instead of the shared ``/tmp/localstripe.pickle`` so a
   server can be killed and restarted with its data (and parallel runs do not collide).
6. ``POST /v1/invoices/{id}/pay`` with ``paid_out_of_band=true`` (localstripe's pay takes
   no parameters): an open invoice becomes paid without a charge.
7. Credit notes (missing): ``POST /v1/credit_notes`` with ``custom_line_item`` lines on an
   open or paid invoice; the pre-payment part (up to ``amount_remaining``) reduces what is
   due (an open invoice left with nothing due becomes paid), the post-payment excess must be
   covered exactly by ``credit_amount`` / ``out_of_band_amount``; at most the invoice total
   minus earlier credit notes. ``GET /v1/credit_notes`` (``customer``, ``invoice``),
   ``GET /v1/credit_notes/{id}``, ``.../lines``, ``POST /v1/credit_notes/{id}/void``.
   Refunds (``refund_amount``) are refused: this server has no charges to refund.

Not patched on purpose (our code must cope without them): idempotency keys (localstripe
ignores ``Idempotency-Key``; our sync looks objects up by metadata before creating them),
the search API (``/v1/customers/search``: our code falls back to listing), prices/products.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

# --------------------------------------------------------------------------- launcher


def patch_localstripe(state_file: str | None) -> None:
    import pickle

    from localstripe import resources as r
    from localstripe import server
    from localstripe.errors import UserError

    # 5. persistence in our own file; dumped after each mutating request by localstripe's
    # middleware (not on every dict assignment, which pickles the whole store each time)
    def dump_to_disk(self):
        if state_file:
            tmp = state_file + ".tmp"
            with open(tmp, "wb") as f:
                pickle.dump(dict(self), f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, state_file)

    def try_load_from_disk(self):
        if state_file and os.path.exists(state_file):
            with open(state_file, "rb") as f:
                old = pickle.load(f)
            dict.clear(self)
            dict.update(self, old)

    r.Store.dump_to_disk = dump_to_disk
    r.Store.try_load_from_disk = try_load_from_disk
    r.Store.__setitem__ = dict.__setitem__
    r.Store.__delitem__ = dict.__delitem__

    # 1. standalone invoices
    original_create = r.Invoice._api_create

    def invoice_create(customer=None, subscription=None, tax_percent=None, default_tax_rates=None,
                       description=None, metadata=None, pending_invoice_items_behavior=None,
                       currency=None, auto_advance=None, collection_method=None, **kwargs):
        if kwargs:
            raise UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
        if subscription is not None:
            return original_create(customer=customer, subscription=subscription, tax_percent=tax_percent,
                                   default_tax_rates=default_tax_rates, description=description,
                                   metadata=metadata)
        if not (isinstance(customer, str) and customer.startswith("cus_")):
            raise UserError(400, "Bad request")
        if metadata is not None and not isinstance(metadata, dict):
            raise UserError(400, "Bad request")
        behavior = pending_invoice_items_behavior or "exclude"
        if behavior not in ("exclude", "include"):
            raise UserError(400, "Bad request")
        r.Customer._api_retrieve(customer)  # 404 if unknown
        pending = [ii for ii in r.InvoiceItem._api_list_all(None, customer=customer, limit=99)._list
                   if ii.invoice is None]
        # simulation=True: the constructor lists pending items without claiming them
        inv = r.Invoice(customer=customer, description=description, metadata=metadata or {},
                        default_tax_rates=default_tax_rates, simulation=True)
        inv.lines._list = []
        if behavior == "include":
            for ii in pending:
                ii.invoice = inv.id
                inv.lines._list.append(r.InvoiceLineItem(ii))
        if currency:
            inv.currency = currency.lower()
        elif inv.lines._list:
            inv.currency = inv.lines._list[0].currency
        inv.auto_advance = str(auto_advance).lower() == "true" if auto_advance is not None else False
        inv.collection_method = collection_method or "charge_automatically"
        return inv

    r.Invoice._api_create = staticmethod(invoice_create)

    # 2. invoice items on a draft invoice
    original_item_init = r.InvoiceItem.__init__

    def item_init(self, invoice=None, **kwargs):
        target = None
        if invoice is not None:
            target = r.Invoice._api_retrieve(invoice) if isinstance(invoice, str) else None
            if target is not None and target.status != "draft":
                raise UserError(400, "You can only add invoice items to draft invoices.")
        original_item_init(self, invoice=invoice, **kwargs)
        if target is not None:
            target.lines._list.append(r.InvoiceLineItem(self))

    r.InvoiceItem.__init__ = item_init

    # 3. finalize
    def finalize(id, auto_advance=None, **kwargs):
        if kwargs:
            raise UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
        inv = r.Invoice._api_retrieve(id)
        if inv.status != "draft":
            raise UserError(400, "This invoice is already finalized, you can't re-finalize a "
                                 "non-draft invoice.")
        inv._finalize()
        if auto_advance is not None:
            inv.auto_advance = str(auto_advance).lower() == "true"
        if inv.status == "paid":
            inv.status_transitions["paid_at"] = inv.status_transitions["finalized_at"]
        return inv

    # 4. void without a payment intent
    original_void = r.Invoice._api_void_invoice

    def void(id, **kwargs):
        inv = r.Invoice._api_retrieve(id)
        if inv.payment_intent is None:
            if inv.status != "open":
                raise UserError(400, "You can only void open invoices.")
            inv._draft = False
            inv._voided = True
            inv.status_transitions["voided_at"] = int(time.time())
            return inv
        return original_void(id)

    # 6. paid_out_of_band (localstripe's pay takes no parameters)
    original_status = r.Invoice.status

    def status(self):
        if getattr(self, "_paid_out_of_band", False) and not self._draft and not self._voided:
            return "paid"
        return original_status.fget(self)

    r.Invoice.status = property(status)
    original_pay = r.Invoice._api_pay_invoice

    def pay(id, paid_out_of_band=None, **kwargs):
        if kwargs:
            raise UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
        if str(paid_out_of_band).lower() != "true":
            return original_pay(id)
        inv = r.Invoice._api_retrieve(id)
        if inv.status != "open":
            raise UserError(400, "Invoice is already paid" if inv.status == "paid" else "Bad request")
        inv._paid_out_of_band = True
        inv.status_transitions["paid_at"] = int(time.time())
        return inv

    _patch_credit_notes(r, server, UserError)

    server.app.router.add_route("POST", "/v1/invoices/{id}/finalize",
                                server.api_extra(finalize, "/v1/invoices/{id}/finalize"))
    # the void route is already registered with a closure over the original function
    for route in server.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        if route.method == "POST" and info.get("formatter") == "/v1/invoices/{id}/void":
            route._handler = server.api_extra(void, "/v1/invoices/{id}/void")
        if route.method == "POST" and info.get("formatter") == "/v1/invoices/{id}/pay":
            route._handler = server.api_extra(pay, "/v1/invoices/{id}/pay")


def _patch_credit_notes(r, server, UserError) -> None:
    """7. Credit notes, as Stripe documents them (see the module docstring)."""

    def to_int(value, name, minimum=0):
        value = r.try_convert_to_int(value)
        if value is None:
            return 0
        if type(value) is not int or value < minimum:
            raise UserError(400, f"Invalid integer: {name}")
        return value

    def credited(inv):
        return sum(cn.total for cn in _notes() if cn.invoice == inv.id and cn.status == "issued")

    def _notes():
        return [v for k, v in r.store.items() if k.startswith("credit_note:")]

    class CreditNoteLineItem(r.StripeObject):
        object = "credit_note_line_item"
        _id_prefix = "cnli_"

        def __init__(self, line):
            if not isinstance(line, dict) or line.get("type") != "custom_line_item":
                raise UserError(400, "Only custom_line_item lines are supported here")
            quantity = to_int(line.get("quantity", 1), "quantity", 1)
            unit_amount = to_int(line.get("unit_amount"), "unit_amount")
            metadata = line.get("metadata") or {}
            if not isinstance(metadata, dict):
                raise UserError(400, "Invalid metadata")
            super().__init__()
            self.type = "custom_line_item"
            self.description = line.get("description")
            self.quantity = quantity
            self.unit_amount = unit_amount
            self.amount = quantity * unit_amount
            self.invoice_line_item = None
            self.metadata = metadata
            self.discount_amounts = []
            self.tax_amounts = []

    class CreditNote(r.StripeObject):
        object = "credit_note"
        _id_prefix = "cn_"

        def __init__(self, invoice=None, lines=None, amount=None, credit_amount=None, refund_amount=None,
                     out_of_band_amount=None, memo=None, metadata=None, reason=None, **kwargs):
            if kwargs:
                raise UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
            if not (isinstance(invoice, str) and invoice.startswith("in_")):
                raise UserError(400, "Missing required param: invoice.")
            if refund_amount is not None:
                raise UserError(400, "Refunds are not supported by this server")
            if metadata is not None and not isinstance(metadata, dict):
                raise UserError(400, "Invalid metadata")
            inv = r.Invoice._api_retrieve(invoice)
            if inv.status not in ("open", "paid"):
                raise UserError(400, f"You can only create a credit note for an open or paid invoice; "
                                     f"this invoice is {inv.status}.")
            if lines is None and amount is None:
                raise UserError(400, "One of amount or lines must be provided.")
            if lines is not None and not isinstance(lines, list):
                raise UserError(400, "Invalid array: lines")
            credit = to_int(credit_amount, "credit_amount")
            oob = to_int(out_of_band_amount, "out_of_band_amount")
            line_specs = lines if lines is not None else [
                {"type": "custom_line_item", "quantity": 1, "unit_amount": amount, "description": "Credit"}]
            total = 0
            for spec in line_specs:
                if not isinstance(spec, dict):
                    raise UserError(400, "Invalid line")
                total += to_int(spec.get("quantity", 1), "quantity", 1) * to_int(spec.get("unit_amount"),
                                                                                  "unit_amount")
            creditable = inv.total - credited(inv)
            if total <= 0 or total > creditable:
                raise UserError(400, f"The credit note amount ({total}) must be positive and at most the "
                                     f"invoice's remaining creditable amount ({creditable}).")
            pre = min(total, inv.amount_remaining) if inv.status == "open" else 0
            post = total - pre
            if credit + oob != post:
                raise UserError(400, f"The sum of credit_amount, refund_amount and out_of_band_amount ({credit + oob})"
                                     f" must equal the credit note's post-payment amount ({post}).")
            super().__init__()
            self.invoice = invoice
            self.customer = inv.customer
            self.currency = inv.currency
            self.memo = memo
            self.metadata = metadata or {}
            self.reason = reason
            self.number = f"{inv.id[3:11].upper()}-CN-{len(_notes()):02d}"
            self.lines = r.List("/v1/credit_notes/" + self.id + "/lines")
            self.lines._list = [CreditNoteLineItem(spec) for spec in line_specs]
            self.amount = self.total = self.subtotal = total
            self.pre_payment_amount = pre
            self.post_payment_amount = post
            self.credit_amount = credit  # not a Stripe field: kept to undo on void
            self.out_of_band_amount = oob or None
            self.type = "pre_payment" if pre and not post else ("post_payment" if post and not pre else "mixed")
            self.status = "issued"
            self.voided_at = None
            self.effective_at = self.created
            if pre:
                inv._cn_pre = getattr(inv, "_cn_pre", 0) + pre
            if post:
                inv._cn_post = getattr(inv, "_cn_post", 0) + post
            if inv.status == "paid" and not inv.status_transitions.get("paid_at"):
                inv.status_transitions["paid_at"] = int(time.time())

        @classmethod
        def _api_list_all(cls, url, customer=None, invoice=None, limit=None, starting_after=None, **kwargs):
            if kwargs:
                raise UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
            li = super()._api_list_all(url, limit=limit, starting_after=starting_after)
            li._list = [cn for cn in li._list if (customer is None or cn.customer == customer)
                        and (invoice is None or cn.invoice == invoice)]
            li._list.sort(key=lambda cn: cn.created, reverse=True)
            return li

    def void_credit_note(id, **kwargs):
        cn = CreditNote._api_retrieve(id)
        if cn.status == "void":
            raise UserError(400, "This credit note is already void.")
        inv = r.Invoice._api_retrieve(cn.invoice)
        if cn.pre_payment_amount and inv.status == "open":
            inv._cn_pre -= cn.pre_payment_amount
        cn.status = "void"
        cn.voided_at = int(time.time())
        return cn

    def lines_of(id, **kwargs):
        cn = CreditNote._api_retrieve(id)
        li = r.List(cn.lines.url, limit=kwargs.get("limit"), starting_after=kwargs.get("starting_after"))
        li._list = cn.lines._list
        return li

    # what remains due on an invoice after pre-payment credit notes; an open invoice with
    # nothing left to pay is paid
    status_before = r.Invoice.status

    def amount_remaining(self):
        if self.status in ("draft", "open"):
            return max(0, self.total - getattr(self, "_cn_pre", 0))
        return 0

    def status(self):
        current = status_before.fget(self)
        if current == "open" and self.total - getattr(self, "_cn_pre", 0) <= 0:
            return "paid"
        return current

    r.Invoice.status = property(status)
    r.Invoice.amount_remaining = property(amount_remaining)
    r.Invoice.amount_due = property(lambda self: max(0, self.total - getattr(self, "_cn_pre", 0)))
    r.Invoice.pre_payment_credit_notes_amount = property(lambda self: getattr(self, "_cn_pre", 0))
    r.Invoice.post_payment_credit_notes_amount = property(lambda self: getattr(self, "_cn_post", 0))

    # the store is pickled to disk: the classes must be found as module attributes
    for cls in (CreditNote, CreditNoteLineItem):
        cls.__qualname__ = cls.__name__
        cls.__module__ = __name__
        globals()[cls.__name__] = cls

    routes = server.app.router
    routes.add_route("POST", "/v1/credit_notes", server.api_create(CreditNote, "/v1/credit_notes"))
    routes.add_route("GET", "/v1/credit_notes", server.api_list_all(CreditNote, "/v1/credit_notes"))
    routes.add_route("GET", "/v1/credit_notes/{id}/lines", server.api_extra(lines_of, "/v1/credit_notes/{id}/lines"))
    routes.add_route("GET", "/v1/credit_notes/{id}", server.api_retrieve(CreditNote, "/v1/credit_notes/{id}"))
    routes.add_route("POST", "/v1/credit_notes/{id}/void",
                     server.api_extra(void_credit_note, "/v1/credit_notes/{id}/void"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", default=None)
    args = parser.parse_args()

    import logging

    from aiohttp import web

    patch_localstripe(args.state)
    from localstripe import resources, server

    resources.store.try_load_from_disk()
    logging.basicConfig(level=logging.WARNING)
    web.run_app(server.app, host="127.0.0.1", port=args.port, print=None, access_log=None)


# --------------------------------------------------------------------------- fixtures helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"localstripe did not start on port {port}")


class LocalStripe:
    """A localstripe server in a subprocess on 127.0.0.1; stop/start keeps its data."""

    def __init__(self, state_dir: Path):
        self.port = free_port()
        self.state = str(Path(state_dir) / "localstripe.pickle")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LocalStripe":
        self.proc = subprocess.Popen([sys.executable, __file__, "--port", str(self.port), "--state", self.state],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_port(self.port)
        except RuntimeError:
            self.proc.kill()
            raise RuntimeError(self.proc.stderr.read().decode() if self.proc.stderr else "no output") from None
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def reset(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.request("DELETE", "/_config/data", headers={"Authorization": "Bearer sk_test_reset"})
        conn.getresponse().read()
        conn.close()


@dataclass
class Fault:
    method: str
    path: str  # regex, matched with re.search against the path (no query)
    nth: int = 1  # fire on the nth matching request (1-based) ...
    times: int = 1  # ... and on this many matches from there
    # 500 | drop_before | drop_after | delay_before | delay_after | call_after | hold_until_retried
    action: str = "500"
    delay: float = 0.0
    callback: Callable[[], None] | None = None
    seen: int = 0
    fired: int = 0


@dataclass
class Recorded:
    method: str
    path: str
    idempotency_key: str | None
    status: int | str


class FaultProxy:
    """A tiny HTTP proxy on 127.0.0.1 in a thread. Faults: 500 on the nth matching call, a
    dropped connection before or after the upstream executed the call, a delay past the
    client's timeout (before or after forwarding), a callback (e.g. kill the server), or
    ``hold_until_retried``: the request is held in the network until the client's retry
    (same Idempotency-Key) has been answered, then delivered late.

    ``idempotency = True`` emulates Stripe's idempotency layer in front of localstripe (which
    ignores the header): the first request with a key that reaches the server is executed
    and its answer saved; a later one with the same key and body gets the saved answer
    (recorded as ``"replayed"``), with another body a 400, while the first is running a 409."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.faults: list[Fault] = []
        self.log: list[Recorded] = []
        self.idempotency = False
        self._saved: dict[str, tuple[bytes, int, list, bytes]] = {}
        self._running: set[str] = set()
        self._answered: dict[str, int] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._active = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                with proxy._lock:
                    proxy._active += 1
                try:
                    self._handle_counted()
                finally:
                    with proxy._changed:
                        proxy._active -= 1
                        proxy._changed.notify_all()

            def _send(self, status, headers, data):
                try:
                    self.send_response(status)
                    for k, v in headers:
                        if k.lower() not in ("transfer-encoding", "connection", "content-length", "date", "server"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

            def _handle_counted(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                fault = proxy._match(self.command, path)
                key = self.headers.get("Idempotency-Key")
                if fault and fault.action == "500":
                    proxy._record(self.command, path, key, "injected 500")
                    data = json.dumps({"error": {"type": "api_error", "message": "injected failure"}}).encode()
                    self.send_response(500)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if fault and fault.action == "drop_before":
                    proxy._record(self.command, path, key, "dropped before")
                    self._drop()
                    return
                if fault and fault.action == "delay_before":
                    time.sleep(fault.delay)
                if fault and fault.action == "hold_until_retried":
                    proxy._wait_answered(key, fault.delay or 20.0)
                idempotent = proxy.idempotency and self.command == "POST" and key
                if idempotent:
                    early = proxy._idempotent_begin(key, body)
                    if early is not None:
                        proxy._record(self.command, path, key, early[0])
                        self._send(*early[1:])
                        return
                try:
                    status, headers, data = proxy._forward(self.command, self.path, self.headers, body)
                except OSError as exc:
                    if idempotent:
                        proxy._idempotent_abort(key)
                    proxy._record(self.command, path, key, f"upstream down: {type(exc).__name__}")
                    self._drop()
                    return
                if idempotent:
                    proxy._idempotent_save(key, body, status, headers, data)
                proxy._record(self.command, path, key, status)
                if fault and fault.action == "call_after" and fault.callback:
                    fault.callback()
                if fault and fault.action == "drop_after":
                    self._drop()
                    return
                if fault and fault.action == "delay_after":
                    time.sleep(fault.delay)
                self._send(status, headers, data)

            def _drop(self):
                try:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
                    self.connection.close()
                except OSError:
                    pass
                self.close_connection = True

            do_GET = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, **kwargs) -> Fault:
        fault = Fault(**kwargs)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        self.wait_idle()
        with self._lock:
            self.faults.clear()
            self.log.clear()
            self.idempotency = False
            self._saved.clear()
            self._running.clear()
            self._answered.clear()

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until no request is in the proxy (delayed or held ones delivered)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._active and time.monotonic() < deadline:
                self._changed.wait(0.05)

    def _wait_answered(self, key: str | None, timeout: float) -> None:
        with self._changed:
            start = self._answered.get(key, 0)
            self._changed.wait_for(lambda: self._answered.get(key, 0) > start, timeout)

    def _idempotent_begin(self, key: str, body: bytes):
        """None to execute the request, else (recorded status, http status, headers, body)."""
        with self._lock:
            if key in self._running:
                return ("idempotency 409", 409, [("Content-Type", "application/json")], json.dumps(
                    {"error": {"type": "idempotency_error", "message": "There is currently another in-progress "
                               "request using this Stripe API key and idempotency key"}}).encode())
            saved = self._saved.get(key)
            if saved is None:
                self._running.add(key)
                return None
            if saved[0] != body:
                return ("idempotency 400", 400, [("Content-Type", "application/json")], json.dumps(
                    {"error": {"type": "idempotency_error", "message": "Keys for idempotent requests can only be "
                               "used with the same parameters they were first used with."}}).encode())
            return ("replayed", saved[1], saved[2] + [("Idempotent-Replayed", "true")], saved[3])

    def _idempotent_save(self, key, body, status, headers, data) -> None:
        with self._changed:
            self._running.discard(key)
            self._saved[key] = (body, status, list(headers), data)

    def _idempotent_abort(self, key) -> None:
        with self._lock:
            self._running.discard(key)

    def calls(self, method: str, path_regex: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.log if r.method == method and re.search(path_regex, r.path)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _match(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.method == method and re.search(fault.path, path):
                    fault.seen += 1
                    if fault.seen >= fault.nth and fault.fired < fault.times:
                        fault.fired += 1
                        return fault
        return None

    def _record(self, method, path, key, status) -> None:
        with self._changed:
            self.log.append(Recorded(method, path, key, status))
            if key:
                self._answered[key] = self._answered.get(key, 0) + 1
                self._changed.notify_all()

    def _forward(self, method, path, headers, body):
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=10)
        try:
            fwd = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection", "content-length")}
            if body:
                fwd["Content-Length"] = str(len(body))
            conn.request(method, path, body=body or None, headers=fwd)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()


# --------------------------------------------------------------------------- webhooks


def sign(payload: str | bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header Stripe sends: ``t=...,v1=HMAC_SHA256(secret, "t.payload")``."""
    t = int(time.time()) if timestamp is None else timestamp
    body = payload.decode() if isinstance(payload, bytes) else payload
    mac = hmac.new(secret.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


if __name__ == "__main__":
    main()


# --------------------------------------------------------------------------- ledger data


def make_db(directory: Path):
    """A migrated SQLite database in ``directory``; returns (url, engine)."""
    from billing.store.db import make_engine, upgrade

    url = f"sqlite:///{Path(directory) / 'billing.db'}"
    upgrade(url)
    return url, make_engine(url)


def add_customer(engine, customer_id: str, name: str = "", currency: str = "USD"):
    from datetime import UTC, datetime

    from sqlmodel import Session

    from billing.store.models import Customer

    with Session(engine) as s:
        s.add(Customer(id=customer_id, name=name or customer_id.title(), currency=currency,
                       created_at=datetime(2026, 1, 1, tzinfo=UTC)))
        s.commit()


_numbers = iter(range(1, 1_000_000))


def add_invoice(engine, customer_id: str, amounts: list[int], *, status: str = "finalized", kind: str = "invoice",
                currency: str = "USD", number: str | None = None, **extra) -> int:
    """An invoice (or credit note) with one line per amount (minor units); returns its id."""
    from datetime import UTC, datetime

    from sqlmodel import Session

    from billing.store.models import Invoice, InvoiceLineRow

    n = next(_numbers)
    start, end = datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC)
    with Session(engine) as s:
        inv = Invoice(number=number or (None if status == "draft" else f"{'CN' if kind == 'credit_note' else 'INV'}-{n:06d}"),
                      dedupe_key=f"test:{n}", kind=kind, status=status, customer_id=customer_id, plan_id="pro",
                      plan_version=1, currency=currency, period_start=start, period_end=end,
                      total_minor=sum(amounts), created_at=end,
                      finalized_at=None if status == "draft" else end, **extra)
        s.add(inv)
        s.flush()
        for pos, amount in enumerate(amounts):
            s.add(InvoiceLineRow(invoice_id=inv.id, position=pos, kind="credit" if amount < 0 else "usage",
                                 key=f"k{pos}", description=f"Line {pos} of {inv.number}", quantity="1",
                                 unit_price=None, amount_minor=amount, service_start=start, service_end=end))
        s.commit()
        return inv.id
