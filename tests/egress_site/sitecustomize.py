"""Arms the test socket guard (tests/egress.py) in every Python process started with this
folder on PYTHONPATH and EVERGREEN_TEST_EGRESS_LOG set: non-loopback connections are refused
and recorded there. Test-only; never on the path of a real deployment."""

import os

if os.environ.get("EVERGREEN_TEST_EGRESS_LOG"):
    import importlib.util
    from pathlib import Path

    _spec = importlib.util.spec_from_file_location("_evergreen_test_egress", Path(__file__).resolve().parents[1] / "egress.py")
    _egress = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_egress)
    _egress.guard_process(os.environ["EVERGREEN_TEST_EGRESS_LOG"])
