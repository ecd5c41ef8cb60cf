"""mlattack.tracking"""
