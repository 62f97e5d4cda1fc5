"""Contracts on top of plans: a subscription's dated overrides of its plan version, coupons
redeemed on it and commitments over a contract term.

* ``terms``: what a subscription's contract says, and what of it applies to one window
  (the effective plan, the discounts, the term commitments) -- what rating reads;
* ``repository``: the rows, read per chunk of subscriptions;
* ``service``: ``Contracts``, the one door the CLI and the API call to add them (every
  input checked; a bad one is a ``BillingError`` naming the field).

The arithmetic lives where every rule of a plan lives (``billing.rating.arithmetic``:
``discounts``, ``credit_room``, ``term_minimum``, ``true_ups``, and the order they apply
in); an override is applied by ``billing.catalog.overrides.effective_plan``.
"""
