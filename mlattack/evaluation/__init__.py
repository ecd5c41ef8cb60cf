"""mlattack.evaluation"""
