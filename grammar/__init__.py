"""The policy language grammar (`policy.lark`), shipped as package data of `dsl`."""
