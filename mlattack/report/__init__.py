"""mlattack.report"""
