"""Renders an amphora's agent configuration with upstream Octavia's own
controller-side templater, as its compute create task does for the config
drive (octavia.amphorae.backends.agent.agent_jinja_cfg.AgentJinjaTemplater
.build_agent_config(amphora_id, topology)).

Usage: python render_agent_config.py AMPHORA_ID TOPOLOGY OVERRIDES_JSON

OVERRIDES_JSON maps "group.option" (group DEFAULT for [DEFAULT]) to the
value an operator would put in octavia.conf. Prints the configuration.
"""
import json
import sys

from oslo_config import cfg
from oslo_log import log

from octavia.amphorae.backends.agent import agent_jinja_cfg
from octavia.common import config  # noqa: F401  (registers the options)


def main():
    amphora_id, topology, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    conf = cfg.CONF
    # [DEFAULT] debug and the other logging options, as octavia's services
    # register them before reading octavia.conf.
    log.register_options(conf)
    # No octavia.conf of this machine: only the overrides below.
    conf([], project='octavia', default_config_files=[], default_config_dirs=[])
    for name, value in overrides.items():
        group, option = name.split('.', 1)
        conf.set_override(option, value, group=None if group == 'DEFAULT' else group)
    templater = agent_jinja_cfg.AgentJinjaTemplater()
    sys.stdout.write(templater.build_agent_config(amphora_id, topology))


if __name__ == '__main__':
    main()
