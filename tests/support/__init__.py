"""What tests share that is not a fixture: plans, scenarios, hypothesis strategies, test
servers and child scripts. Holds no tests; fixtures are in the conftest.py files."""
