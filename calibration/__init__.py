"""ssdkit subpackage."""
