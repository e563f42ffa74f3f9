"""What the server tells its operator: log handlers and files (`logs`), one line and the metrics per request
(`requests`), and the Prometheus metrics (`metrics`)."""
