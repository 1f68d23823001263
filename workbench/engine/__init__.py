"""The paper-trading engine: dispatch, strategy, broker, positions, risk, journal."""
