"""The browser client as package data: ``templates/`` (Jinja) and ``static/`` (served under ``/static/``).

No Python code lives here; the package exists so that the wheel carries these files and the server finds
them through :mod:`importlib.resources`, wherever Alcove is installed.
"""
