"""A client's channel over mutual TLS to a server whose certificates come
from a test PKI (enforcement.clients.certs.generate, one folder per CA)."""
import grpc


def channel(pki, port, who=None, ca_dir="ours"):
    root = (pki / "ours" / "ca.pem").read_bytes()
    if who is None:
        credentials = grpc.ssl_channel_credentials(root_certificates=root)
    else:
        d = pki / ca_dir
        credentials = grpc.ssl_channel_credentials(
            root_certificates=root, private_key=(d / f"{who}.key").read_bytes(),
            certificate_chain=(d / f"{who}.pem").read_bytes())
    return grpc.secure_channel(f"localhost:{port}", credentials)
