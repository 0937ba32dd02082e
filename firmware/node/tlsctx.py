# TLS for the link, imported only when the settings ask for it ("tls": true): the hub's CA,
# deployed as ca.der next to settings.json, must have signed the hub's certificate. With
# cert.der and key.der beside it (`hub device cert`), the device also proves who it is with
# its own certificate (mutual TLS) and needs no password.
import tls

CA_FILE = "ca.der"
CERT_FILE = "cert.der"
KEY_FILE = "key.der"


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def client_context():
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(_read(CA_FILE))  # the tls module takes DER data, positionally
    ctx.verify_mode = tls.CERT_REQUIRED
    try:
        cert = _read(CERT_FILE)
    except OSError:
        return ctx  # no client certificate: the device logs in with its secret
    ctx.load_cert_chain(cert, _read(KEY_FILE))
    return ctx
