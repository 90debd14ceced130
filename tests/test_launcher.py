"""kernels/launcher.py: the remembered launches are checked call by call against Triton's own on a stand-in
sm_90 driver by the static model (tests/test_static_model.py); here, that this Triton still launches the way
the launcher replays, so that a Triton upgrade that changes it is caught rather than quietly slower."""
import triton

from kernels import launcher


def test_the_installed_triton_launches_the_way_the_launcher_replays():
    assert launcher.REPLAYS, f"Triton {triton.__version__}: JITFunction.run no longer passes every bound argument"


def test_forget_drops_every_remembered_signature():
    launcher._known[("probe",)] = launcher._THROUGH_TRITON
    assert launcher.forget() >= 1 and launcher._known == {}
