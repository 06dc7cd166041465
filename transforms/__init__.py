"""Beam transforms of the CloudZero AnyCost connector: thin wrappers over `pipeline`'s pure logic."""
