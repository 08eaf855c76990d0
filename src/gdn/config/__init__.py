"""One home for configuration: where the config tree is, the resolvers, the structured-config schemas, group
choices, composition and the value checks, for every command (gdn-train, gdn-eval, gdn-generate, gdn-models,
gdn-sweep). Imports nothing of gdn's data, models or trainer: configuration is the top of the flow."""
from gdn.config.choices import check_group_overrides, group_choices, missing_scale_size, user_config_dirs
from gdn.config.compose import compose_config, config_tree
from gdn.config.paths import CONF_DIR, SWEEPS_DIR
from gdn.config.resolvers import LAUNCH_TIME_ENV, launch_time, register_resolvers
from gdn.config.schema import register_schemas

register_schemas()  # the group files name their schema in their defaults lists: stored before any composition

__all__ = ["CONF_DIR", "LAUNCH_TIME_ENV", "SWEEPS_DIR", "check_group_overrides", "compose_config", "config_tree",
           "group_choices", "launch_time", "missing_scale_size", "register_resolvers", "user_config_dirs"]
