"""mlattack.attacks"""
