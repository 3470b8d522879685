"""``ntkfast serve``: an interactive page where clicked 1-D points are fitted by the
infinite-width network (NTK regression / gradient flow), with the NTK-GP band, finite-width
networks trained by gradient descent, and a heatmap of Θ(x, x').

- :mod:`ntkfast.apps.web.api`: the JSON API as pure functions (no web framework needed);
- :mod:`ntkfast.apps.web.app`: the Flask application, ``add_serve_arguments`` and
  ``main_from_args`` for the command line (Flask: ``pip install 'ntkfast[serve]'``).
"""

__all__ = ["api"]
