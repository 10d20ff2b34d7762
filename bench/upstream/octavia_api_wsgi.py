"""Upstream Octavia's API as a WSGI application for gunicorn.

The same app `octavia-api` (octavia/cmd/api.py) and the `octavia-wsgi`
script serve, built with the configuration file in $OCTAVIA_API_CONFIG:

    OCTAVIA_API_CONFIG=octavia.conf gunicorn --workers 2 \
        --pythonpath bench/upstream octavia_api_wsgi:application
"""

import os

from octavia.api import app as api_app

application = api_app.setup_app(
    argv=["octavia-api", "--config-file", os.environ["OCTAVIA_API_CONFIG"]])
