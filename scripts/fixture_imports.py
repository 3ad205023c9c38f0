"""Stand-ins for modules a fixture script imports only through another script and never uses:
make_fixtures imports onnxruntime (its replay), clip_vocab imports open_clip (its vocabulary).
Scripts that reuse make_fixtures' models run without them installed."""
import importlib.machinery
import sys
import types


def stub_if_absent(*names):
    for name in names:
        try:
            __import__(name)
        except ImportError:
            stub = types.ModuleType(name)
            stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
            sys.modules[name] = stub
