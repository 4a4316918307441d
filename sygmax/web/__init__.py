"""The bundled web UI: built by Vite from ``web/`` into ``sygmax/web/static`` (see :mod:`sygmax.web.spa`)."""
