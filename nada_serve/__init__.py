"""Serving exported generators: the tritonserver launcher (nada-serve), the gRPC client library and
nada-client, and the Triton python-backend model that runs each exported graph.

The client side (nada_serve.client, nada_serve.cli.client) needs numpy, pillow and tritonclient, not
torch: `pip install 'nada[client]'` is enough on a machine that only asks for images.
"""
