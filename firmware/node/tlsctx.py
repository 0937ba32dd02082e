# TLS for the link, imported only when the settings ask for it ("tls": true): the hub's CA,
# deployed as ca.der next to settings.json, must have signed the hub's certificate.
import tls

CA_FILE = "ca.der"


def client_context():
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    with open(CA_FILE, "rb") as f:
        ctx.load_verify_locations(f.read())  # the tls module takes DER data, positionally
    ctx.verify_mode = tls.CERT_REQUIRED
    return ctx
