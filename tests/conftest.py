import pkgutil

import tests.fixtures

# Each area keeps its expensive, session-scoped fixtures (exported ONNX, bundles, the emulated board)
# in tests/fixtures/<area>.py, so they are built once per run and areas do not edit one shared file.
pytest_plugins = [f"tests.fixtures.{m.name}" for m in pkgutil.iter_modules(tests.fixtures.__path__)]
