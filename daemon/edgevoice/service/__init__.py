"""Running under systemd: notify, watchdog, signals, logging, status."""
