"""Offline tooling (model import, ONNX export, the OpenAPI document): used by models/ and make, left out of the Bento."""
