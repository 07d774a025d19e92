"""Test scaffolding for child processes that must not touch the network.

``REFUSE_NETWORK`` is Python source to put first in a child process's script:
every connection attempt is recorded in the list ``attempts`` and refused, so a
test asserts on the cause (no attempt at all) rather than on a wall-clock time.
"""
REFUSE_NETWORK = '''
import socket
attempts = []
def _refuse(*args, **kwargs):
    attempts.append(repr(args[1:2] or args[:1]))
    raise OSError('network refused by the test')
socket.socket.connect = socket.socket.connect_ex = socket.create_connection = _refuse
'''
