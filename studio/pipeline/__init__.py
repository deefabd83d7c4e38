"""From a pipeline file to a checked plan: the YAML read with a line for every value
(yamlfile), the caller's options (options), each step checked (spec, step_params), the
graph and the expansion into items (plan), every item's parameters through its
generator's validators (item_checks), and the whole in order of cost (validate).
Nothing here runs a generator or writes a file."""
