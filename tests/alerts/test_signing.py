"""Standard Webhooks signatures: the spec's published test vector, rotation, tolerance."""

from __future__ import annotations

import base64

from billing.alerts import signing

# the test vector of the Standard Webhooks reference libraries (test_sign_function)
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_spec_test_vector():
    assert signing.sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE
    headers = signing.headers(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    assert headers == {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS),
                       "webhook-signature": VECTOR_SIGNATURE}
    assert signing.verify(VECTOR_SECRET, VECTOR_BODY, headers, now=VECTOR_TS + 10)


def test_verify_refuses_what_it_should():
    h = signing.headers(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    now = VECTOR_TS
    assert not signing.verify(VECTOR_SECRET, VECTOR_BODY + b" ", h, now=now)  # body changed
    assert not signing.verify(signing.new_secret(), VECTOR_BODY, h, now=now)  # other secret
    assert not signing.verify(VECTOR_SECRET, VECTOR_BODY, {**h, "webhook-id": "msg_other"}, now=now)
    assert not signing.verify(VECTOR_SECRET, VECTOR_BODY, h, now=now + 301)  # too old
    assert not signing.verify(VECTOR_SECRET, VECTOR_BODY, h, now=now - 301)  # too new
    assert not signing.verify(VECTOR_SECRET, VECTOR_BODY, {**h, "webhook-timestamp": "x"}, now=now)
    assert not signing.verify(VECTOR_SECRET, VECTOR_BODY, {k: v for k, v in h.items() if k != "webhook-id"}, now=now)
    # the one flipped-bit signature of the reference tests
    bad = {**h, "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="}
    assert not signing.verify(VECTOR_SECRET, VECTOR_BODY, bad, now=now)
    # headers in any case; several signatures (rotation): one v1 match suffices
    upper = {k.upper(): v for k, v in h.items()}
    upper["WEBHOOK-SIGNATURE"] = "v2,abc v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= " + h["webhook-signature"]
    assert signing.verify(VECTOR_SECRET, VECTOR_BODY, upper, now=now)


def test_new_secrets_follow_the_spec():
    secret = signing.new_secret()
    assert secret.startswith("whsec_") and signing.valid_secret(secret)
    assert len(base64.b64decode(secret[6:])) == 32 and secret != signing.new_secret()
    assert not signing.valid_secret("whsec_" + base64.b64encode(b"short").decode())
    assert not signing.valid_secret("whsec_not base64!") and not signing.valid_secret("plain")
    # a secret without the prefix (the older BILLING_WEBHOOK_SECRET) signs with its bytes
    assert signing.secret_key("s3cret") == b"s3cret"
