"""mlattack.models"""
