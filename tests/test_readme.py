"""The README's API example runs as written."""
import os
import re

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def test_readme_api_example_runs():
    with open(README) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    assert blocks, "README has a python example"
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    assert set(scope["losses"]) == {"contrastive", "crossmodal", "visual", "mlm", "total"}
    assert scope["logits"].shape[:2] == scope["mlm_tokens"].shape
