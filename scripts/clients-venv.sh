#!/usr/bin/env bash
# Creates (once) a virtualenv with the real OpenStack clients (openstacksdk,
# python-openstackclient + python-octaviaclient), a real Keystone served by
# gunicorn, and pytest, for tests/controller; prints its python on stdout
# (logs go to stderr). Keystone co-installs with the clients on Python 3.11,
# so one venv serves both. Kept under target/ so repeated runs on one machine
# reuse it; it is rebuilt when an import or a pinned version is off.
#   PY=$(scripts/clients-venv.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/clients-venv

# What the tests use, at the versions they were written against.
pins=(
    openstacksdk==4.22.0
    python-octaviaclient==3.15.0
    python-openstackclient==10.5.0
    osc-lib==4.7.0
    keystone==30.0.0
    keystonemiddleware==13.0.1
    gunicorn==27.0.1
    pytest==9.2.0
)
# Everything else, as resolved when the pins above were first installed
# together (2026-11-30, CPython 3.11.7); keeps later releases out.
constraints='
alembic==1.20.1
amqp==5.4.2
aniso8601==10.0.1
attrs==26.1.0
autopage==0.6.0
bcrypt==5.0.0
blinker==1.9.0
cachetools==8.0.2
certifi==2026.10.19.post1
cffi==2.1.1
charset-normalizer==3.5.3
click==8.5.1
cliff==4.17.0
cmd2==4.3.1
cryptography==50.0.2
debtcollector==3.1.0
decorator==5.3.1
defusedxml==0.7.1
dnspython==2.9.2
dogpile.cache==1.5.0
elementpath==4.8.0
eventlet==0.41.3
fasteners==0.20
Flask==3.1.3
Flask-RESTful==0.3.10
futurist==3.5.0
greenlet==3.5.6
idna==3.20
iniconfig==2.3.1
iso8601==2.1.0
itsdangerous==2.2.0
Jinja2==3.1.6
jmespath==1.1.0
jsonpatch==1.48
jsonpointer==3.12
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
keystoneauth1==5.18.1
kombu==5.7.0
Mako==1.4.3
markdown-it-py==4.3.0
MarkupSafe==3.0.4
mdurl==0.1.2
msgpack==1.2.4
netaddr==1.3.0
oauthlib==4.0.1
os-service-types==1.9.0
oslo.cache==4.3.0
oslo.concurrency==7.6.1
oslo.config==10.7.0
oslo.context==6.5.0
oslo.db==18.1.1
oslo.i18n==6.9.0
oslo.log==8.3.2
oslo.messaging==18.3.1
oslo.metrics==0.17.0
oslo.middleware==8.2.0
oslo.policy==6.0.1
oslo.serialization==5.11.0
oslo.service==4.8.0
oslo.upgradecheck==2.8.0
oslo.utils==10.2.0
osprofiler==4.4.0
packaging==26.4
Paste==3.10.1
PasteDeploy==3.1.0
pbr==7.1.3
platformdirs==4.14.9
pluggy==1.7.0
prettytable==3.18.0
prometheus_client==0.26.0
prompt_toolkit==3.0.53
psutil==7.2.2
pycadf==4.1.0
pycparser==3.12
Pygments==2.21.0
PyJWT==2.15.1
pyOpenSSL==26.4.0
pyparsing==3.3.3
pyperclip==1.11.0
pysaml2==7.5.5
python-dateutil==4.0.0
python-keystoneclient==6.0.0
python-manilaclient==6.3.0
pytz==2026.6
PyYAML==6.0.4
referencing==0.37.0
repoze-lru==0.8
requests==2.34.2
rfc3986==2.0.0
rich==15.0.0
rich-argparse==1.8.0
Routes==2.5.1
rpds-py==2026.9.1
six==1.17.0
SQLAlchemy==2.1.9
statsd==4.0.1
stevedore==5.10.0
testresources==2.1.2
testscenarios==0.7.0
typing_extensions==4.16.0
tzdata==2026.6
urllib3==2.8.0
vine==5.1.0
wcwidth==0.9.4
WebOb==1.8.11
Werkzeug==3.1.9
wrapt==2.5.2
xmlschema==2.5.1
yappi==1.7.6
'

check='
import sys
from importlib.metadata import version
import openstack, octaviaclient, openstackclient, osc_lib, keystone
import keystone.server.wsgi, keystonemiddleware, gunicorn, pytest
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    if version(name) != want:
        sys.exit("%s is %s, want %s" % (name, version(name), want))
'

if ! "$venv/bin/python" -c "$check" "${pins[@]}" >/dev/null 2>&1 \
    || [ ! -x "$venv/bin/openstack" ] || [ ! -x "$venv/bin/keystone-manage" ]; then
    if ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "python3-venv is missing; run as root to install it" >&2
            exit 1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends python3-venv >&2 || {
            apt-get update -qq >&2
            apt-get install -y --no-install-recommends python3-venv >&2
        }
    fi
    echo "clients-venv: creating $venv" >&2
    rm -rf "$venv"
    mkdir -p target
    python3 -m venv "$venv" >&2
    cfile=$(mktemp)
    trap 'rm -f "$cfile"' EXIT
    printf '%s\n' "$constraints" >"$cfile"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        -c "$cfile" "${pins[@]}" >&2
    "$venv/bin/python" -c "$check" "${pins[@]}" >&2
fi
echo "$PWD/$venv/bin/python"
