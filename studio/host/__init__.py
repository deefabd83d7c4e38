"""The plugin host: plugins found through the "studio" entry-point group and loaded
with a broken one kept from taking the rest down (plugins), what they registered
(registry), the host's own plugin (builtin), and a new plugin package to start from
(scaffold)."""
